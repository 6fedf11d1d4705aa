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
