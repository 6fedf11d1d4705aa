"""Figures: each one draws from the analysis tables and saves as a PNG (Agg, no display)."""

from harness.analysis import compute_analysis, plots

PNG = b"\x89PNG\r\n\x1a\n"


def test_every_figure_saves_as_png(planted_dir, tmp_path):
    a = compute_analysis(planted_dir)
    figures = {
        "interaction": plots.interaction_figure(a.cells, "n_domains", "lora_rank", 0.25),
        "heatmap": plots.heatmap_figure(a.cells, "n_domains", "lora_rank"),
        "tracks": plots.track_panels_figure(a.track_cells, "n_domains", "lora_rank"),
        "curves": plots.training_curves_figure(a.loaded.trials, "n_domains", "lora_rank"),
    }
    for name, fig in figures.items():
        path = plots.save_figure(fig, tmp_path / f"{name}.png")
        assert path.read_bytes()[:8] == PNG, name
    # one line per rank (plus the baseline) on the interaction plot
    assert len(figures["interaction"].axes[0].lines) == 3 + 1
    assert len([ax for ax in figures["tracks"].axes if ax.get_visible()]) == 4


def test_plots_do_not_switch_the_global_backend():
    import matplotlib

    before = matplotlib.get_backend()
    plots.new_figure()
    assert matplotlib.get_backend() == before


def test_track_panel_titles_do_not_overlap():
    # The smoke fixture's tracks are 'amazon-kdd-cup-24-...' names of up to 49 characters.
    from pathlib import Path

    smoke = compute_analysis(Path(__file__).resolve().parents[1] / "fixtures" / "smoke_results")
    fig = plots.track_panels_figure(smoke.track_cells, "n_domains", "lora_rank")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_visible()]
    assert len(boxes) == 4
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    width = fig.bbox.width
    assert all(0 <= b.x0 and b.x1 <= width for b in boxes)  # none runs off the canvas
    assert "amazon-kdd-cup-24-" in fig.get_suptitle()


def test_shared_prefix_cuts_at_a_separator_and_keeps_every_name():
    assert plots.shared_prefix(["kdd-cup-a-x", "kdd-cup-b-y"]) == ("kdd-cup-", ["a-x", "b-y"])
    assert plots.shared_prefix(["lora", "lora_mole"]) == ("", ["lora", "lora_mole"])  # leaves ""
    assert plots.shared_prefix(["1", "2"]) == ("", ["1", "2"])
    assert plots.shared_prefix(["only-one"]) == ("", ["only-one"])
