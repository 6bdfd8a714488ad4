package e2e_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/engine"
	order "github.com/sagaflow/sagaflow/examples/order"
	"github.com/sagaflow/sagaflow/examples/order/services"
	"github.com/sagaflow/sagaflow/internal/telemetry"
	"github.com/sagaflow/sagaflow/saga"
)

// TestMetricsCountAKnownRun runs 10 orders that complete and 3 whose payment is declined, then
// scrapes /metrics from the orchestrator's HTTP server and finds exactly those counts.
func TestMetricsCountAKnownRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mp, reg, err := telemetry.NewMeterProvider(t.Context(), telemetry.Config{ServiceName: "sagaflow"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mp.Shutdown(t.Context()) })

	// The example's own definition (timeouts of seconds, not the fast one): no attempt may time
	// out, so every count below is exact.
	def, err := order.LoadDefinition()
	require.NoError(t, err)
	faults := order.Faults{Seed: 7}
	const declineRate = 0.4
	stack := e.run(t, stackConfig{RunOrchestrator: true, HTTPAddr: "127.0.0.1:0", Definition: def,
		Options: services.Options{PaymentDeclineRate: declineRate, Seed: faults.Seed}, MeterProvider: mp,
		MetricsHandler: telemetry.MetricsHandler(reg)})

	// Pick 10 orders the payment service accepts and 3 it declines (its decision is a function of
	// the seed and the order id).
	inj := order.NewInjector(faults)
	gen := order.NewGenerator(11, "metrics")
	var accepted, declined []order.Input
	for len(accepted) < 10 || len(declined) < 3 {
		in := gen.Next()
		if inj.Decide("decline", in.OrderID, declineRate) {
			if len(declined) < 3 {
				declined = append(declined, in)
			}
		} else if len(accepted) < 10 {
			accepted = append(accepted, in)
		}
	}
	var ids []string
	for _, in := range append(accepted, declined...) {
		raw, err := json.Marshal(in)
		require.NoError(t, err)
		id, err := stack.Engine().Start(t.Context(), order.Definition, in.OrderID, raw, engine.StartOptions{})
		require.NoError(t, err)
		ids = append(ids, id)
	}
	statuses := map[saga.Status]int{}
	for _, id := range ids {
		in, err := stack.Engine().Wait(t.Context(), id)
		require.NoError(t, err)
		statuses[in.Status]++
	}
	require.Equal(t, map[saga.Status]int{saga.StatusCompleted: 10, saga.StatusCompensated: 3}, statuses)

	url := "http://" + stack.Addr() + "/metrics"
	def1 := map[string]string{"definition": order.Definition}
	with := func(kv ...string) map[string]string {
		m := map[string]string{"definition": order.Definition}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	// Counters are recorded after each commit; the relay's last batch is counted once it is
	// acknowledged, so poll until the outbox is drained.
	var fams map[string]*dto.MetricFamily
	require.Eventually(t, func() bool {
		fams = scrape(t, url)
		return value(fams, "sagaflow_outbox_backlog", map[string]string{"outbox": "sagaflow"}) == 0 &&
			value(fams, "sagaflow_relay_published_total", map[string]string{"outbox": "sagaflow"}) == 55
	}, 30*time.Second, 50*time.Millisecond, "outbox drained and 55 commands published")

	require.Equal(t, 13.0, value(fams, "sagaflow_sagas_started_total", def1))
	require.Equal(t, 10.0, value(fams, "sagaflow_sagas_finished_total", with("status", "completed")))
	require.Equal(t, 3.0, value(fams, "sagaflow_sagas_finished_total", with("status", "compensated")))
	require.Equal(t, -1.0, value(fams, "sagaflow_sagas_finished_total", with("status", "failed")), "no failed series")
	// Steps: every order ran create, reserve and charge; 10 charges succeeded, 3 were declined; the
	// 3 declined orders released their stock and cancelled their order.
	stepCount := func(step, action, outcome string) float64 {
		return histogramCount(fams, "sagaflow_step_duration_seconds", with("step", step, "action", action, "outcome", outcome))
	}
	require.Equal(t, 13.0, stepCount("create-order", "forward", "success"))
	require.Equal(t, 13.0, stepCount("reserve-inventory", "forward", "success"))
	require.Equal(t, 10.0, stepCount("charge-payment", "forward", "success"))
	require.Equal(t, 3.0, stepCount("charge-payment", "forward", "failure"))
	require.Equal(t, 10.0, stepCount("schedule-shipping", "forward", "success"))
	require.Equal(t, 3.0, stepCount("reserve-inventory", "compensate", "success"))
	require.Equal(t, 3.0, stepCount("create-order", "compensate", "success"))
	require.Equal(t, -1.0, stepCount("charge-payment", "compensate", "success"), "a declined charge is not refunded")
	require.Nil(t, fams["sagaflow_step_retries_total"], "no retries")
	require.Nil(t, fams["sagaflow_step_timeouts_total"], "no timeouts")
	require.Nil(t, fams["sagaflow_dead_lettered_total"], "nothing dead-lettered")
	// Every service's relay published its replies: 13+13+13+10 forward and 3+3 compensation replies.
	published := 0.0
	for _, s := range order.Services {
		published += value(fams, "sagaflow_relay_published_total", map[string]string{"outbox": s})
	}
	require.Equal(t, 55.0, published)
	// Nothing is in flight: the gauge has no running or compensating series (or they are 0).
	for _, st := range []string{"running", "compensating", "failed"} {
		require.LessOrEqual(t, value(fams, "sagaflow_sagas_in_flight", with("status", st)), 0.0, st)
	}
	require.Equal(t, 0.0, value(fams, "sagaflow_outbox_oldest_unpublished_age_seconds", map[string]string{"outbox": "sagaflow"}))
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain"), resp.Header.Get("Content-Type"))
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return fams
}

// series returns the metric of family name whose labels include want, or nil.
func series(fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	f, ok := fams[name]
	if !ok {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

// value is a counter's or gauge's value, -1 when the series does not exist.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	m := series(fams, name, want)
	switch {
	case m == nil:
		return -1
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	return -1
}

// histogramCount is a histogram's sample count, -1 when the series does not exist.
func histogramCount(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	m := series(fams, name, want)
	if m == nil || m.Histogram == nil {
		return -1
	}
	return float64(m.GetHistogram().GetSampleCount())
}
