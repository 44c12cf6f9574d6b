"""Image and caption processors, and image file reading (``image_io``)."""
