"""Keep native libraries' chatter off the terminal without hiding real errors.

TensorFlow, the TFLite converter and LiteRT print INFO lines from C++ straight
to file descriptor 2 ("Created TensorFlow Lite XNNPACK delegate for CPU",
"fully_quantize: 0, ...", oneDNN and CUDA notices), where neither Python's
logging nor TF_CPP_MIN_LOG_LEVEL reaches them. Inside `native_stderr_captured`
fd 2 points at a temporary file; what was written there is replayed only if
the block raises (Ctrl-C excepted), so a real failure still shows everything the
library said.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Run the block with fd 2 redirected; replay the captured text if it raises."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all (some embedded interpreters): nothing to capture
        yield
        return
    python_stderr = sys.stderr
    with tempfile.TemporaryFile() as captured, _python_stderr_kept(saved):
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except KeyboardInterrupt:
            raise  # Ctrl-C is not a failure: the CLI says so in one line, without the library's INFO chatter
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            python_stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def _python_stderr_kept(terminal_fd: int) -> Iterator[None]:
    """Keep Python's own stderr writes (our progress lines, warnings) going to `terminal_fd`.

    Only when `sys.stderr` is the process's fd 2; a replaced stderr (a test
    runner's capture, a notebook's stream) is left alone.
    """
    try:
        is_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        is_fd2 = False
    if not is_fd2:
        yield
        return
    original = sys.stderr
    with os.fdopen(os.dup(terminal_fd), "w", buffering=1, encoding=original.encoding, errors="replace") as kept:
        sys.stderr = kept
        try:
            yield
        finally:
            sys.stderr = original
