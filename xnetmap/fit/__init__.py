"""xnetmap.fit"""
