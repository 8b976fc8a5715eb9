"""fsck"""
