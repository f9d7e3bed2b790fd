"""Serving: the champion as a BentoML service (``service.py``) and what it is made of."""
