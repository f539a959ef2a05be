"""Sphinx configuration for the smtpd_lite manual.

Builds offline with Sphinx alone: the built-in alabaster theme, autodoc
importing the package from this checkout, and the local extension in _ext/
that generates the option, reply and command-line tables from the code.
"""

import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(DOCS))           # the repository: import smtpd_lite
sys.path.insert(0, os.path.join(DOCS, "_ext"))

import smtpd_lite  # noqa: E402

project = "smtpd_lite"
author = "the smtpd_lite authors"
copyright = "the smtpd_lite authors, MIT License"
version = release = smtpd_lite.__version__

extensions = ["sphinx.ext.autodoc", "smtpd_lite_docs"]

root_doc = master_doc = "index"
exclude_patterns = ["_build", "examples"]
templates_path = []
language = "en"
default_role = "code"
highlight_language = "none"      # code blocks name their language
pygments_style = "sphinx"

autodoc_member_order = "bysource"
autodoc_typehints = "none"
add_module_names = False

html_theme = "alabaster"
html_title = "smtpd_lite %s" % release
html_static_path = []
html_theme_options = {
    "description": "A threaded, synchronous SMTP server for Python 3.8+",
    "fixed_sidebar": False,
    "page_width": "1100px",
    "show_relbars": True,
}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}
html_show_sourcelink = False
smartquotes = False
