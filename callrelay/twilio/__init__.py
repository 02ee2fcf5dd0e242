"""Everything Twilio-shaped: Media Streams messages, TwiML, REST calls."""
