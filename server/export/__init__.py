"""Publishing the consensus model: manifest drafting, the MONAI bundle export, and its verification.

Entry points: :func:`server.export.draft.draft_manifest`, :func:`server.export.writer.export_run`,
:func:`server.export.verify.verify_export`, and :func:`server.export.demo.demo_publish` (the end of
``insite demo``).
"""
