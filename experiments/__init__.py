"""Shipped experiment configs (YAML), installed as the package data ``ecg_dan.experiments``."""
