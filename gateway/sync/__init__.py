"""sync: mirror the writes one side completed to the other side, so both databases stay in step while a route
migrates (the contract: PRODUCT.md, "Keeping both sides' data in step").

Owns the capture of a synced write beside the primary exchange and its hand-off to the journal (``capture``),
the delivery worker that sends journaled writes to the other side in order, with backoff (``deliver``), and the
read-after-write check (``verify``). May import ``config``, ``routing``, ``proxy``, ``compare``, ``stores``
and ``errors``. On the request path it costs nothing on a route without ``sync:``.
"""
