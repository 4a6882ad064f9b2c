"""Site-side DICOM de-identification (DICOM PS3.15 Annex E, 2024b) that fails closed.

Entry points:

- :func:`siteprep.deid.run.deidentify_tree`: a folder of raw DICOM to a de-identified folder, a
  quarantine (with a reason per file) and an audit report (:class:`siteprep.deid.run.RunReport`);
- :func:`siteprep.deid.scan.scan_tree`: the residual-identifier scan of an output folder against
  its originals (``insite site scan``).

Raw DICOM with planted identifiers, for the tests, the benchmark and the demo, is made outside
this package, by the demo's generator.

One job per module: ``profile`` (Table E.1-1 + options -> one action per tag), ``engine`` (apply
it to every element), ``identifiers`` (what counts as an identifying value), ``keys`` (site secret,
pseudonyms, date offsets, keyed UIDs), ``keyfile`` (the key file encrypted under the site's
passphrase), ``passphrase`` (where that passphrase comes from), ``key_admin`` (migration,
passphrase rotation, backups, the honest broker's logged look-up), ``parsing`` (strict reading),
``pixels`` (burned-in risk and the ultrasound cleaning rule), ``values`` (dummies, date shifts,
text cleaning), ``elements`` (raw element access), ``settings`` (the TOML configuration),
``reasons`` (quarantine reasons), ``writing`` (encoding, raw elements copied), ``job`` (one file's
work) and ``pool`` (jobs in worker processes, the run's key answering for patients; workers get
the key as a loan in memory, never a file).
"""
