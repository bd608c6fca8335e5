"""The data sets: their file formats (`formats`), where they are found (`lookup`), verified
downloads (`fetch`) and the survey behind `milr data list` (`survey`)."""
