"""The script language: emotion and motion tags, pauses, SSML, auto emotion and motions."""
