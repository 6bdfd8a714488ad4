CREATE TABLE IF NOT EXISTS hotel_rooms (
    hotel TEXT    PRIMARY KEY,
    free  INTEGER NOT NULL CHECK (free >= 0)
);
CREATE TABLE IF NOT EXISTS hotel_holds (
    hold_id TEXT    PRIMARY KEY,
    trip_id TEXT    NOT NULL,
    hotel   TEXT    NOT NULL,
    nights  INTEGER NOT NULL,
    status  TEXT    NOT NULL CHECK (status IN ('held', 'released'))
);
