"""xnetmap.data"""
