"""The data sets: their file formats, where they are found (`datasets`), and verified downloads
with the survey behind `milr data list` (`fetch`)."""
