"""One case in the clinic: decoding (DICOM too), quality, input gate and OOD checks, the diagnose pipeline, report, audit."""
