"""adapters/chain"""
