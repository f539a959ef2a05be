# Metadata lives in setup.cfg; this shim lets old pips and `setup.py develop` work.
from setuptools import setup

setup()
