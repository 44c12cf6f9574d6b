"""Image and caption processors (:mod:`.blip_processors`, registered when imported), image
file reading (:mod:`.image_io`, light: the demo's CLI and the data tools use it without torch)
and DICOM decoding (:mod:`.dicom`)."""
