"""PetSeg: segment pet photos into pet, background and border with a U-Net.

Importing the package is cheap: TensorFlow and gradio load only in the modules that need them.
"""

__version__ = "0.1.0"
