"""The in-process server the suite drives: ``capture()`` with every server default.

``smtpd_lite.testing.capture`` is lenient by default (it accepts what
mainstream MTAs accept); the suite tests the server's own defaults, so it
uses ``strict=True`` unless a test says otherwise.
"""

import functools

from smtpd_lite.testing import capture as lenient_capture

capture = functools.partial(lenient_capture, strict=True)
