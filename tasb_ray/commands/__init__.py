"""One module per ``tasb-ray`` command; each is a thin layer over library functions."""
