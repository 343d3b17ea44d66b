"""xnetmap.graph"""
