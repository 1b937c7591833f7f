"""Decoding and checking images and videos."""
