"""The Pareto front and its plot."""


def test_pareto_front_keeps_the_undominated_points(tmp_path):
    from qnas_deploy.bench.pareto import front, plot

    pts = [(1.0, 20.0), (2.0, 22.0), (2.0, 21.0), (3.0, 21.5), (4.0, 23.0), (0.5, 19.0), (1.0, 20.0)]
    # (2, 21) and (3, 21.5) are beaten by (2, 22); the duplicate (1, 20) points do not dominate each other.
    assert front(pts) == [5, 0, 6, 1, 4]
    entries = [{"name": f"a{i}", "cost": c, "psnr": q} for i, (c, q) in enumerate(pts)] + [{"name": "no", "cost": None}]
    plot(entries, tmp_path / "p.png", "psnr", "PSNR", [("cost", "cost", 1, True)], baseline=19.5)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
