"""The study notes of one video: :mod:`.data` decides what they say (``report.json``),
:mod:`.pdf` lays that out with reportlab, :mod:`.charts` draws the voice charts with matplotlib."""
