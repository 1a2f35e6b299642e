"""cxrlab: how much does an ImageNet-pretrained ConvNet help on a small medical image data set,
used how, at what cost."""

__version__ = "0.1.0"
