"""tempo"""
