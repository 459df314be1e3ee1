"""The ``tiled-unet`` console script, one module per verb."""
