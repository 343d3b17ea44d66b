"""xnetmap.study"""
