"""xnetmap.check"""
