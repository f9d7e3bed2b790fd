"""Reports: Evidently report builders (`reports`) and the workspace a browser opens them in
(`report_store`)."""
