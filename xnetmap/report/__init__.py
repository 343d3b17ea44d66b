"""xnetmap.report"""
