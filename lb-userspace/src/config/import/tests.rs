//! Grammar and mapping tests of the importer.
