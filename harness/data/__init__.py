"""Getting data into the HEST layout: hub downloads, importers (her2st) and the synthetic demo."""
