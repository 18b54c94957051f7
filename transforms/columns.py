"""Column names, in one place. Raw ids are strings (user_id, item_id); ALS needs int32 (user_idx, item_idx)."""

USER_ID = "user_id"
ITEM_ID = "item_id"
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
EVENT_ID = "event_id"
EVENT_TYPE = "event_type"
EVENT_TS = "event_ts"
EVENT_DATE = "event_date"
EVENT_MONTH = "event_month"  # yyyy-MM: silver's partition column for rating dumps spanning decades
SOURCE_EVENT_ID = "source_event_id"  # the event id the log carried, if any (the dedup key when present)
EVENT_KEY_PREFIX = "event_key_prefix"  # silver/event_keys: the first 60 bits of an event_id, as a long
VALUE = "value"
WEIGHT = "weight"
RATING = "rating"
SCORE = "score"
RANK = "rank"
N_EVENTS = "n_events"
LAST_EVENT_TS = "last_event_ts"
MODEL_VERSION = "model_version"
FEATURES = "features"

# provenance and quarantine
RAW = "raw"
SOURCE_FILE = "source_file"
SOURCE_OFFSET = "source_offset"  # byte offset of the input split the row was read from (0 for a whole file)
SOURCE_MODIFIED = "source_modified_at"  # the input file's modification time (the pairs formats' event time)
SOURCE_LINE = "source_line"  # 1-based line (or row) number within that split
INGEST_RUN_ID = "ingest_run_id"
INGESTED_AT = "ingested_at"
REASON = "reason"
PARSE_REASON = "parse_reason"  # bronze: the parser's reason (null: a good row); quarantine's reason adds the outlier policy

# The ALS estimator's own names map to ours here and nowhere else.
ALS_USER_COL = USER_IDX
ALS_ITEM_COL = ITEM_IDX

RATING_EVENT = "rating"
PAIR_EVENT = "pair"  # the event type of the pairs formats' rows (user, item, weight)
