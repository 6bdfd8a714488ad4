// Package hotel is a complete Sagaflow participant service written outside the Sagaflow module,
// with only its public packages: it holds rooms for trips (HoldRoom) and releases them when the
// trip is compensated (ReleaseRoom), each inside a transaction of its own database that also
// records the command in the participant's barrier and writes the reply to the outbox.
package hotel

import (
	"context"
	_ "embed" // the schema
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/participant"
)

// Service is the service name trip-booking.yaml gives the hotel.
const Service = "hotel"

// Commands of the service, as the definition names them.
const (
	CommandHold    = "HoldRoom"
	CommandRelease = "ReleaseRoom"
)

//go:embed schema.sql
var schema string

// Trip is the saga's start input.
type Trip struct {
	TripID string `json:"trip_id"`
	Hotel  string `json:"hotel"`
	Nights int    `json:"nights"`
}

// Hold is HoldRoom's output, merged into the saga's data under the step's name.
type Hold struct {
	HoldID string `json:"hold_id"`
}

// Migrate creates the participant's tables (barrier, outbox) and the hotel's own in db. A real
// service would run its own migration tool for its tables; these statements are idempotent.
func Migrate(ctx context.Context, db *sqlx.DB) error {
	if err := participant.Migrate(ctx, db); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("hotel schema: %w", err)
	}
	return nil
}

// Register registers the hotel's handlers on p.
func Register(p *participant.Participant) {
	p.Handle(CommandHold, hold)
	p.Compensate(CommandRelease, release)
}

// hold takes a room of the trip's hotel. No room left is a business failure: the trip compensates.
// An input that can never be a trip is refused for good: it goes to the dead-letter stream.
func hold(ctx context.Context, tx *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
	var trip Trip
	if err := cmd.Input(&trip); err != nil {
		return participant.Result{}, participant.Reject(err)
	}
	if trip.TripID == "" || trip.Hotel == "" || trip.Nights < 1 {
		return participant.Result{}, participant.Reject(fmt.Errorf("trip %q: want trip_id, hotel and nights >= 1", trip.TripID))
	}
	res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE hotel_rooms SET free = free - 1 WHERE hotel = ? AND free > 0`), trip.Hotel)
	if err != nil {
		return participant.Result{}, fmt.Errorf("take a room at %s: %w", trip.Hotel, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return participant.Result{}, err
	} else if n == 0 {
		return participant.Failure("no room left at " + trip.Hotel), nil
	}
	holdID := "hold-" + cmd.SagaID
	if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO hotel_holds (hold_id, trip_id, hotel, nights, status) VALUES (?, ?, ?, ?, 'held')`),
		holdID, trip.TripID, trip.Hotel, trip.Nights); err != nil {
		return participant.Result{}, fmt.Errorf("record hold for trip %s: %w", trip.TripID, err)
	}
	return participant.Success(Hold{HoldID: holdID}), nil
}

// release gives the held room back. The barrier calls it only when HoldRoom succeeded here, once.
func release(ctx context.Context, tx *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
	var h Hold
	ok, err := cmd.StepOutput("hold-room", &h)
	if err != nil {
		return participant.Result{}, err
	}
	if !ok {
		return participant.Result{}, errors.New("no hold-room output to release")
	}
	var hotel string
	if err := tx.GetContext(ctx, &hotel, tx.Rebind(`UPDATE hotel_holds SET status = 'released' WHERE hold_id = ? AND status = 'held' RETURNING hotel`), h.HoldID); err != nil {
		return participant.Result{}, fmt.Errorf("release hold %s: %w", h.HoldID, err)
	}
	if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE hotel_rooms SET free = free + 1 WHERE hotel = ?`), hotel); err != nil {
		return participant.Result{}, fmt.Errorf("give a room back at %s: %w", hotel, err)
	}
	return participant.Success(nil), nil
}

// AddRooms sets the free rooms of hotel (for tests and demos).
func AddRooms(ctx context.Context, db *sqlx.DB, hotel string, free int) error {
	_, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO hotel_rooms (hotel, free) VALUES (?, ?)`), hotel, free)
	return err
}
