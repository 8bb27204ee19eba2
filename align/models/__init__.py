"""The classifier (torchvision ResNet-18) and the masker (Sec. 5.1)."""
