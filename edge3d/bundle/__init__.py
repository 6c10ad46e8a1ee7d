"""The back end: build and verify the target's artifacts (``artifacts``), write the bundle's
manifest (``manifest``) and human report (``report_md``)."""
