"""Reading inputs and writing outputs: arrays, axes, TIFF, OME-Zarr."""
