"""adapters/db"""
