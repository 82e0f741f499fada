from konspekt import cli


def test_every_stage_is_a_command(capsys):
    names = cli.commands()
    assert {"extract-audio", "transcribe", "summarize", "features", "render-pdf", "sample"} <= set(names)
    assert cli.main(["nonexistent"]) == 2
    assert "commands:" in capsys.readouterr().err


def test_dispatches_to_the_stage(tmp_path, capsys):
    code = cli.main(["extract-audio", "--video-dir", str(tmp_path / "missing")])
    assert code == 1  # no video.json: an internal error, reported as JSON on the last line
    assert '"stage": "extract_audio"' in capsys.readouterr().out.splitlines()[-1]
