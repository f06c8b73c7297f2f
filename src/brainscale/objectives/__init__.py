"""Self-distillation objectives of Brain-Semantoks: coding-rate losses, slice masks, augmentations."""
