"""xnetmap.extract"""
