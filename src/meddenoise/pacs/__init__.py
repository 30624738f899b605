"""Where images live: a DICOM node (C-STORE in, derived series out) and a DICOMweb client.

`meddenoise.pacs.node.Node` receives series over DIMSE, denoises each once it is complete and
sends the derived series on; `meddenoise.pacs.spool.Spool` is its durable state (files and a
SQLite table), so that an acknowledged instance is never lost; `meddenoise.pacs.dicomweb` pulls
a study over QIDO-RS/WADO-RS and stores the result with STOW-RS.  pynetdicom and dicomweb-client
come with the ``pacs`` extra and are imported only when used.
"""
