"""Names both sides of a round agree on, beyond Flower's own ("arrays", "metrics", "config")."""

# Train config flag: score the received global model on the site's validation cases before
# training, and report it with this prefix on the evaluate metric names.
EVALUATE_INCOMING = "evaluate-incoming"
INCOMING_PREFIX = "incoming-"

# Train config: which run a round belongs to. Not Flower's run id, which changes whenever a run
# supervisor resubmits after a coordinator crash: this key stays for the run's whole life, so a
# site keeps what it carries between rounds (client.site_state) across resumes and drops it
# when a new run starts.
RUN_KEY = "run-key"

# Legacy (SecAgg+) train replies name their site in this metric; plain replies carry a "site"
# ConfigRecord. Either way the coordinator reports failures and Dice by site name.
SITE_METRIC = "site"

# SecAgg+ under insite: the next round's key set-up and key shares travel inside this round's
# masked-update and unmasking messages (server/secure_overlap.py), as this config record, both
# ways; towards the site it also names the next round's group (its round number).
NEXT_ROUND_RECORD = "insite.secagg-next-round"
NEXT_ROUND_GROUP = "insite-group"
