"""The napari plugin: widgets, reader, writer and sample data (the only package that imports napari/Qt)."""
