"""Many files: finding inputs, one job per file, resumable runs."""

from .files import (
           BatchConfig,
           FileResult,
           FileStarted,
           find_inputs,
           format_summary,
           segment_files,
           segment_files_iter,
)
from .resume import Notice

__all__ = ["BatchConfig", "FileResult", "FileStarted", "Notice", "find_inputs", "format_summary", "segment_files",
           "segment_files_iter"]
