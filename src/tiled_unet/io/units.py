"""Length units as OME-Zarr, OME-TIFF, ImageJ and others write them, in micrometres."""

from __future__ import annotations

# lower-case spellings -> micrometres; "µm" is the micro sign (U+00B5), "μm" the Greek mu (U+03BC)
UNITS = {"m": 1e6, "meter": 1e6, "metre": 1e6, "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
         "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3, "um": 1.0, "\u00b5m": 1.0, "\u03bcm": 1.0,
         "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0, "nm": 1e-3,
         "nanometer": 1e-3, "nanometre": 1e-3, "pm": 1e-6, "picometer": 1e-6, "picometre": 1e-6}


def unit_factor(unit: str | None) -> float | None:
    """Micrometres per ``unit`` (any case; ``\\u00B5`` written out as text is the micro sign), or
    None for no unit or one that is not a length."""
    if not unit:
        return None
    return UNITS.get(str(unit).strip().lower().replace("\\u00b5", "\u00b5"))
