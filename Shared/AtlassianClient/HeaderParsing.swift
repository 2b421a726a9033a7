import Foundation

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date. PDR documents seconds (§3.4); dates are accepted
/// because any proxy in front of Atlassian may send them.
package enum RetryAfter {
    /// The wait the header asks for, measured from `now`; a date in the past means "now" (zero); nil when the value is
    /// neither form.
    package static func parse(_ value: String, now: Date = Date()) -> Duration? {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        if !trimmed.isEmpty, trimmed.allSatisfy(\.isASCIIDigit) {
            guard let seconds = Int64(trimmed) else { return nil }
            return .seconds(seconds)
        }
        guard let date = httpDate(trimmed) else { return nil }
        let interval = date.timeIntervalSince(now)
        return interval <= 0 ? .zero : .milliseconds(Int64((interval * 1000).rounded()))
    }

    /// IMF-fixdate, plus the two obsolete forms RFC 9110 says recipients must accept.
    static func httpDate(_ value: String) -> Date? {
        // asctime pads the day with a space ("Nov  6"); collapse runs of spaces so one pattern fits.
        let value = value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        for pattern in ["EEE, dd MMM yyyy HH:mm:ss zzz", "EEEE, dd-MMM-yy HH:mm:ss zzz", "EEE MMM d HH:mm:ss yyyy"] {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = pattern
            if let date = formatter.date(from: value) { return date }
        }
        return nil
    }
}

/// The PDR `Cycle-Period` header (§3.5). Its format is not documented: community code reads integer seconds, a test
/// fixture uses ISO-8601 (`P7D`), so both are accepted.
package enum CyclePeriod {
    /// Integer seconds (`604800`) or an ISO-8601 duration with weeks, days, hours, minutes and seconds (`P7D`, `P1W`,
    /// `PT604800S`, `P1DT2H30M`, `PT0.5S`). Years and months are refused: their length is ambiguous, and falling back
    /// to the 7-day default reports more often, never less — the compliant side. Zero, negative, or any other text →
    /// nil.
    package static func parse(_ value: String) -> Duration? {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        if !trimmed.isEmpty, trimmed.allSatisfy(\.isASCIIDigit) {
            guard let seconds = Int64(trimmed), seconds > 0 else { return nil }
            return .seconds(seconds)
        }
        return parseISO8601(trimmed.uppercased())
    }

    private static func parseISO8601(_ value: String) -> Duration? {
        guard value.hasPrefix("P"), value.count > 1 else { return nil }
        var seconds = 0.0
        var number = ""
        var inTime = false
        var sawComponent = false
        var sawTimeComponent = false
        var lastRank = -1 // designators must appear in order, each at most once
        for character in value.dropFirst() {
            if character.isASCIIDigit || character == "." || character == "," {
                number.append(character == "," ? "." : character)
                continue
            }
            if character == "T" {
                guard !inTime, number.isEmpty else { return nil }
                inTime = true
                continue
            }
            guard let amount = Double(number), amount >= 0 else { return nil }
            number = ""
            let (rank, unit): (Int, Double)
            switch (inTime, character) {
            case (false, "W"): (rank, unit) = (0, 604_800)
            case (false, "D"): (rank, unit) = (1, 86_400)
            case (true, "H"): (rank, unit) = (2, 3_600)
            case (true, "M"): (rank, unit) = (3, 60)
            case (true, "S"): (rank, unit) = (4, 1)
            default: return nil // Y, month M, unknown designators
            }
            guard rank > lastRank else { return nil }
            lastRank = rank
            seconds += amount * unit
            sawComponent = true
            sawTimeComponent = sawTimeComponent || inTime
        }
        guard number.isEmpty, sawComponent, !inTime || sawTimeComponent, seconds > 0, seconds < 1e12 else { return nil }
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
