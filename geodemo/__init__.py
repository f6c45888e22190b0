"""geodemo: where in Croatia was this street-level photo taken?"""
