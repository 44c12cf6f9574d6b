"""Image and caption processors, image file reading (``image_io``) and DICOM decoding (``dicom``)."""
