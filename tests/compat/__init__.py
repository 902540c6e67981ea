"""Popular Django apps next to the plugin: their behaviour and the delivery outcomes, both right.

Each set-up is its own settings module here, so the shared test project stays as it is.
"""
