"""The report's sections, one module each: each takes the study's results (and the folder its
figures go to) and returns the section's blocks."""
