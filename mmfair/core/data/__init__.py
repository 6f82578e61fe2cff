"""Sources (MIMIC, synthetic), cohort + labels + folds, hourly time series, CXR images and the HDF5 store."""
